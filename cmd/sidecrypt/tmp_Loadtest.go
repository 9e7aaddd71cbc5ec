package main

// TEMPORARY placeholder until the loadtest command is implemented.
func cmdLoadtest(a *app, args []string) int { a.stderr.Write([]byte("not implemented yet\n")); return exitFail }
