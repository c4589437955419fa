"""s2core.masks"""
