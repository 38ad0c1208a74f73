"""What happens after a recommendation: feedback events, their durable log and store, the
experiment that splits users between two served versions, and the online metrics that decide it."""
