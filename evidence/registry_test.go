package evidence

import "testing"

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@db:5432/m?sslmode=disable":     "postgres://u:xxxxx@db:5432/m?sslmode=disable",
		"postgres://u@db/m":                                 "postgres://u@db/m",
		"postgres://db/m?user=u&password=secret":            "postgres://db/m?password=xxxxx&user=u",
		"postgres://u:p@ss@db/m":                            "postgres://u:xxxxx@db/m",
		"postgres://u@db/m?application_name=a@b":            "postgres://u@db/m?application_name=a@b",
		"sqlite:/var/lib/meshproof/e.db":                    "sqlite:/var/lib/meshproof/e.db",
		"postgresql://u:secret@[::1]:5432/m?password=other": "postgresql://u:xxxxx@[::1]:5432/m?password=xxxxx",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
