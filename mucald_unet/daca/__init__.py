"""DACA, domain-adversarial causal alignment: the gradient-reversal layer and the server's
domain discriminator that sees the transmitted features of every client.
"""
