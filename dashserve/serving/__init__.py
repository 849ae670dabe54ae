"""dashserve.serving"""
