"""intake: the online half of the tip line (web app, encrypted store, codenames, Tor).

It holds journalists' public keys only; see DESIGN.md for the data flow.
"""
