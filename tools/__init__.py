"""fxopt.tools"""
