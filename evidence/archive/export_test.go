package archive

// FrontierOf is the end frontier rows give after m's start frontier.
func FrontierOf(m *Manifest, rows []Row) ([]string, error) {
	f, err := newFrontier(m.LeafStart, m.StartFrontier)
	if err != nil {
		return nil, err
	}
	var s Shapes
	for i := range rows {
		rec, err := s.Record(&rows[i])
		if err != nil {
			return nil, err
		}
		h, err := parseHash(rec.Chain.Hash)
		if err != nil {
			return nil, err
		}
		f.add(h)
	}
	return f.hex(), nil
}

// MarshalManifest is the manifest as Seal writes it.
var MarshalManifest = marshalManifest

// Claim takes an archive directory as a sealing run does.
var Claim = claim
