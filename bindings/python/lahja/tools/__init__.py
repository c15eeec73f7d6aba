"""
Declarative tests of endpoints, as lahja's: drivers (an initializer and
actions), engines (how a framework runs them) and runners (in one process,
or each driver in a process of its own).
"""
