"""The qres command line."""
def main():
    pass
