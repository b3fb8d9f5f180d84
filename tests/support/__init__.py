"""What the tests share and are no tests: image builders, Azurite and its proxy, sign-in stand-ins, oracles."""
