"""`assistant eval`: how well the assistant finds (and answers from) the right documents for an organisation's own
questions, kept run by run so an upgrade or a re-ingestion can be compared with what came before."""
