package loadtest

// Word lists for the generator. Names are common given and family names
// from many languages, written in ASCII so that a document's size in bytes
// is its length in characters.

var givenNames = []string{
	"Maria", "James", "Aiko", "Olu", "Sofia", "Mohammed", "Ingrid", "Wei", "Priya", "Lucas",
	"Fatima", "Noah", "Elena", "Kofi", "Hana", "Mateo", "Anya", "Liam", "Chen", "Amara",
	"Jonas", "Leila", "Diego", "Sakura", "Emma", "Ravi", "Zainab", "Oskar", "Camila", "Ibrahim",
	"Freya", "Tariq", "Yuki", "Nadia", "Pedro", "Astrid", "Kwame", "Mei", "Omar", "Clara",
}

var familyNames = []string{
	"Garcia", "Smith", "Tanaka", "Okafor", "Rossi", "Haddad", "Larsen", "Zhang", "Sharma", "Silva",
	"Nguyen", "Muller", "Kowalski", "Mensah", "Kim", "Hernandez", "Ivanova", "Murphy", "Chen", "Diallo",
	"Berg", "Khan", "Lopez", "Sato", "Dubois", "Patel", "Abdi", "Nilsen", "Costa", "Yilmaz",
	"Johansson", "Rahman", "Ito", "Petrov", "Santos", "Eriksen", "Boateng", "Wang", "Farouk", "Novak",
}

var domains = []string{"example.com", "example.org", "example.net"}

var streets = []string{
	"Maple Street", "Harbour Road", "Kings Avenue", "Station Lane", "Elm Court", "Mill Road",
	"Church Street", "Park Avenue", "River Walk", "Hillside Drive", "Market Square", "Oak Terrace",
}

var cities = []string{
	"Springfield", "Riverton", "Lakewood", "Fairview", "Georgetown", "Oslo", "Lyon", "Leeds",
	"Hamburg", "Porto", "Toronto", "Bergen", "Valencia", "Madison", "Salem", "Bristol",
}

// diagnoses are ICD-10 codes with their titles.
var diagnoses = [][2]string{
	{"E11.9", "Type 2 diabetes mellitus without complications"},
	{"I10", "Essential (primary) hypertension"},
	{"J45.909", "Unspecified asthma, uncomplicated"},
	{"F32.A", "Depression, unspecified"},
	{"M54.5", "Low back pain"},
	{"K21.9", "Gastro-esophageal reflux disease without esophagitis"},
	{"E78.5", "Hyperlipidemia, unspecified"},
	{"J06.9", "Acute upper respiratory infection, unspecified"},
	{"N39.0", "Urinary tract infection, site not specified"},
	{"G43.909", "Migraine, unspecified, not intractable"},
	{"L20.9", "Atopic dermatitis, unspecified"},
	{"R51.9", "Headache, unspecified"},
}

var noteWords = []string{
	"patient", "reports", "mild", "pain", "since", "last", "visit", "follow", "up", "in",
	"two", "weeks", "advised", "rest", "fluids", "and", "review", "of", "medication", "dose",
	"blood", "pressure", "stable", "today", "no", "known", "allergies", "referred", "to", "clinic",
	"customer", "called", "about", "billing", "address", "updated", "card", "replaced", "after", "loss",
	"symptoms", "improved", "with", "treatment", "continue", "current", "plan", "lab", "results", "normal",
	"discussed", "diet", "exercise", "sleep", "schedule", "next", "appointment", "morning", "evening", "notes",
}
