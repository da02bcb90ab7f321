"""Developer tools on top of mdqe/, export/ and runtime/ (parity harness against the authors' code)."""
