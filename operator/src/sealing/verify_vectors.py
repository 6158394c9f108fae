# Independent check of test_vectors.json with Python's cryptography (OpenSSL): python3 operator/src/sealing/verify_vectors.py
import json, base64, struct
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
def field(s): b=s.encode(); return struct.pack(">H",len(b))+b
for v in json.load(open("operator/src/sealing/test_vectors.json")):
    rs = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["recipientSecretHex"]))
    rp = rs.public_key().public_bytes(*raw)
    assert base64.b64encode(rp).decode()==v["recipientPublicBase64"]
    es = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["ephemeralSecretHex"]))
    ep = es.public_key().public_bytes(*raw)
    shared = es.exchange(X25519PublicKey.from_public_bytes(rp))
    repo = v["repo"].lower().removeprefix("https://").removesuffix(".git")
    scope = b"outlayer-scope-v1"+field(v["owner"])+field(repo)+(b"\0" if v["branch"] is None else b"\1"+field(v["branch"]))+field(v["profile"])
    kid = v["keyId"].encode()
    key = HKDF(hashes.SHA256(), 32, ep+rp, b"outlayer-sealed-v1\0"+bytes([len(kid)])+kid+scope).derive(shared)
    nonce = bytes.fromhex(v["nonceHex"])
    header = b"OLS\x01"+bytes([len(kid)])+kid+ep+nonce
    pt = json.dumps(json.loads(v["plaintext"]), separators=(",",":"), sort_keys=True, ensure_ascii=False).encode()
    ct = ChaCha20Poly1305(key).encrypt(nonce, pt, header+scope)
    assert base64.b64encode(header+ct).decode()==v["sealedBase64"], v["name"]
    print("ok", v["name"])
