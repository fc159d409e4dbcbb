print("dotted")
