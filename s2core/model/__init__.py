"""s2core.model"""
