"""Small helpers every floor may use: atomic writes, quiet third-party logs, runtime tools."""
