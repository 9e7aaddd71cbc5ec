package loadtest
