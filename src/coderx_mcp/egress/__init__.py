"""Network egress by allowlist: one HTTP(S) proxy per server (proxy.py with our plugin),
sessions on an internal Docker network whose only way out is that proxy."""
