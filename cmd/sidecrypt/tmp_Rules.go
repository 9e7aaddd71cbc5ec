package main

// TEMPORARY placeholder until the rules command is implemented.
func cmdRules(a *app, args []string) int { a.stderr.Write([]byte("not implemented yet\n")); return exitFail }
