"""dashserve.api"""
