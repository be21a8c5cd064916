"""The reusable parts: settings, the Metriport client, the store, the webhook inbox and the domain rules."""
