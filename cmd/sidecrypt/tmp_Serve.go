package main

// TEMPORARY placeholder until the serve command is implemented.
func cmdServe(a *app, args []string) int { a.stderr.Write([]byte("not implemented yet\n")); return exitFail }
