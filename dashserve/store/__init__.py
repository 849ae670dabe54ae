"""dashserve.store"""
