package main

// TEMPORARY placeholder until the ca command is implemented.
func cmdCA(a *app, args []string) int { a.stderr.Write([]byte("not implemented yet\n")); return exitFail }
