package ec2

import (
	"encoding/base64"
	"slices"
	"strings"

	"kiln/daemon/api"
)

type keyPairResponse struct {
	meta
	KeyFingerprint string    `xml:"keyFingerprint"`
	KeyMaterial    string    `xml:"keyMaterial,omitempty"`
	KeyName        string    `xml:"keyName"`
	KeyPairID      string    `xml:"keyPairId"`
	Tags           list[tag] `xml:"tagSet"`
}

func keyPairAnswer(kp api.KeyPair) *keyPairResponse {
	return &keyPairResponse{KeyFingerprint: kp.KeyFingerprint, KeyMaterial: kp.KeyMaterial, KeyName: kp.KeyName, KeyPairID: kp.KeyPairID, Tags: tagSet(kp.Tags)}
}

func createKeyPair(c *call) (answer, *Error) {
	name, e := c.p.required("KeyName")
	if e != nil {
		return nil, e
	}
	if f := c.p.get("KeyFormat"); f != "" && f != "pem" {
		return nil, errorf(codeInvalidParameterValue, "KeyFormat %s: kiln gives private keys as pem only", clip(f))
	}
	specs, e := c.p.tagSpecs("key-pair")
	if e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	kp, err := c.s.kiln.CreateKeyPair(c.ctx, api.CreateKeyPairRequest{Name: name, Type: c.p.get("KeyType"), Tags: specs["key-pair"]})
	if err != nil {
		return nil, fromAPI(err, false)
	}
	return keyPairAnswer(kp), nil
}

func importKeyPair(c *call) (answer, *Error) {
	name, e := c.p.required("KeyName")
	if e != nil {
		return nil, e
	}
	material, e := c.p.required("PublicKeyMaterial")
	if e != nil {
		return nil, e
	}
	pub, err := base64.StdEncoding.DecodeString(material)
	if err != nil {
		return nil, errorf(codeInvalidParameterValue, "PublicKeyMaterial is not base64 (the SDKs encode it; the aws CLI does with fileb://)")
	}
	specs, e := c.p.tagSpecs("key-pair")
	if e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	kp, err := c.s.kiln.CreateKeyPair(c.ctx, api.CreateKeyPairRequest{Name: name, PublicKey: string(pub), Tags: specs["key-pair"]})
	if err != nil {
		return nil, fromAPI(err, false)
	}
	return keyPairAnswer(kp), nil
}

type keyPairInfo struct {
	KeyPairID      string    `xml:"keyPairId"`
	KeyFingerprint string    `xml:"keyFingerprint"`
	KeyName        string    `xml:"keyName"`
	KeyType        string    `xml:"keyType"`
	Tags           list[tag] `xml:"tagSet"`
	PublicKey      string    `xml:"publicKey,omitempty"`
	CreateTime     string    `xml:"createTime"`
}

type describeKeyPairsResponse struct {
	meta
	KeyPairs list[keyPairInfo] `xml:"keySet"`
}

func describeKeyPairs(c *call) (answer, *Error) {
	names, pairIDs := c.p.values("KeyName"), c.p.values("KeyPairId")
	fs, e := c.p.filters()
	if e != nil {
		return nil, e
	}
	withPublic, e := c.p.boolean("IncludePublicKey")
	if e != nil {
		return nil, e
	}
	var all []api.KeyPair
	if err := c.s.kiln.Call(c.ctx, "GET", "/key-pairs", kilnFilters(fs), nil, &all); err != nil {
		return nil, fromAPI(err, false)
	}
	// Names are the caller's own (another's pair of the same name is not this one).
	all = slices.DeleteFunc(all, func(kp api.KeyPair) bool {
		return len(names) > 0 && !(slices.Contains(names, kp.KeyName) && kp.OwnerID == c.caller.User) ||
			len(pairIDs) > 0 && !slices.Contains(pairIDs, kp.KeyPairID)
	})
	var missing []string
	for _, n := range names {
		if !slices.ContainsFunc(all, func(kp api.KeyPair) bool { return kp.KeyName == n }) {
			missing = append(missing, n)
		}
	}
	for _, id := range pairIDs {
		if !slices.ContainsFunc(all, func(kp api.KeyPair) bool { return kp.KeyPairID == id }) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, errorf("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", strings.Join(missing, "', '"))
	}
	if c.dry {
		return c.dryRun()
	}
	resp := &describeKeyPairsResponse{KeyPairs: list[keyPairInfo]{Items: []keyPairInfo{}}}
	for _, kp := range all {
		info := keyPairInfo{KeyPairID: kp.KeyPairID, KeyFingerprint: kp.KeyFingerprint, KeyName: kp.KeyName, KeyType: kp.KeyType,
			Tags: tagSet(kp.Tags), CreateTime: ts(kp.CreateTime)}
		if withPublic {
			info.PublicKey = kp.PublicKey
		}
		resp.KeyPairs.Items = append(resp.KeyPairs.Items, info)
	}
	return resp, nil
}

type deleteKeyPairResponse struct {
	meta
	Return    bool   `xml:"return"`
	KeyPairID string `xml:"keyPairId,omitempty"`
}

// deleteKeyPair deletes a pair of the caller's by name or id; as EC2's, a pair that does
// not exist is no error.
func deleteKeyPair(c *call) (answer, *Error) {
	name, id := c.p.get("KeyName"), c.p.get("KeyPairId")
	if name == "" && id == "" {
		return nil, errorf(codeMissingParameter, "The request must contain the parameter KeyName or KeyPairId")
	}
	var all []api.KeyPair
	if err := c.s.kiln.Call(c.ctx, "GET", "/key-pairs", nil, nil, &all); err != nil {
		return nil, fromAPI(err, false)
	}
	i := slices.IndexFunc(all, func(kp api.KeyPair) bool {
		return kp.OwnerID == c.caller.User && (id != "" && kp.KeyPairID == id || id == "" && kp.KeyName == name)
	})
	if c.dry {
		return c.dryRun()
	}
	if i < 0 {
		return &deleteKeyPairResponse{Return: true}, nil
	}
	if _, err := c.s.kiln.DeleteKeyPair(c.ctx, all[i].KeyPairID); err != nil {
		return nil, fromAPI(err, false)
	}
	return &deleteKeyPairResponse{Return: true, KeyPairID: all[i].KeyPairID}, nil
}
