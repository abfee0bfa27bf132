"""The workbench's state in plain Python (no Qt): models change, emit signals, and Qt views subscribe.

Like napari's components, a model never knows who draws it, so it is tested without a display.
"""
