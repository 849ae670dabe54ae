"""dashserve.platform"""
