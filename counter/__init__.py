"""The visit counter: configuration, page rules, Datastore, responses and logs."""
