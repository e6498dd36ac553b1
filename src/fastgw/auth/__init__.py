"""JWT authentication: strict JWS parsing, key sets, claim checks, verified-token cache.

``codes`` holds the outcome codes and the one table that turns them into HTTP;
``jws`` parses compact tokens and checks signatures; ``keys`` is the key model
and the JWK filtering rules; ``verifier`` ties them together per provider.
"""
