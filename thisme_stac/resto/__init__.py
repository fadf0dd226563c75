"""resto client and THISME address-bar queries."""
