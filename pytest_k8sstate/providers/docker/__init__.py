"""providers/docker"""
