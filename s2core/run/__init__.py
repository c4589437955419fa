"""s2core.run"""
