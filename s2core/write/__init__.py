"""s2core.write"""
