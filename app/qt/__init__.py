"""The PySide6 workbench: thin views over app.models, driving app.services. The only Qt in the project.

Nothing outside this package imports Qt, and `fedseg` imports this package only for `fedseg gui`.
"""
