"""binaries"""
