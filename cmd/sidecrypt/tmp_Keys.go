package main

// TEMPORARY placeholder until the keys command is implemented.
func cmdKeys(a *app, args []string) int { a.stderr.Write([]byte("not implemented yet\n")); return exitFail }
