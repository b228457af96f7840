"""The broker edge: oslo.messaging's endpoint, the bounded server, at-most-once delivery.

Only this layer, the client, the daemon and ``dbworker-manage`` import oslo.messaging.
"""
