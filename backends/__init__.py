"""fxopt.backends"""
