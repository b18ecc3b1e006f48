"""providers/kind"""
