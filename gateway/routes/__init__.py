"""HTTP routes: each translates the wire to one service call and back."""
