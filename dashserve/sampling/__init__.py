"""dashserve.sampling"""
