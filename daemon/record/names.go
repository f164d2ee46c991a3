package record

import "kiln/internal/ids"

// MaxNameLen bounds an instance's name.
const MaxNameLen = 128

// CheckName checks an instance's name: 1 to MaxNameLen letters, digits, '.', '-' and '_',
// beginning with a letter or a digit (as a container's name), and not an instance id. A
// name never holds a space or a '/', so that it is one word in a listing and in a shell,
// and never a path.
func CheckName(name string) error {
	return ids.CheckWord("instance name", name, MaxNameLen, ".-_", InstancePrefix)
}
