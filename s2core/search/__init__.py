"""s2core.search"""
