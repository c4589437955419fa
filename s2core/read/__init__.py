"""s2core.read"""
