"""s2core.runfolder"""
