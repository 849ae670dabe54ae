"""dashserve.model"""
