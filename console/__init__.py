"""The read side for people: the village doctor's web pages, the patient and alarm-fatigue reports, the FHIR
export, and the read-only view of a clinic's storage they all read (each store's own queries)."""
