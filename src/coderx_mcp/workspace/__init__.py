"""Session workspaces: which host directories (policy), made how (prepare), diffed how."""
