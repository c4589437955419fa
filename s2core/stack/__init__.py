"""s2core.stack"""
