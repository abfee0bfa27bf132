"""Plain-Python services of the workbench (no Qt): settings, study loading, jobs in child processes.

Long work runs as `fedseg` child processes that write the project's events; services start them and
read their events, and Qt pages poll the services from a timer, so the window never blocks.
"""
