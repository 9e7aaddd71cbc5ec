package main

// TEMPORARY placeholder until the audit command is implemented.
func cmdAudit(a *app, args []string) int { a.stderr.Write([]byte("not implemented yet\n")); return exitFail }
