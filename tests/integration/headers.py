"""Case-insensitive lookup in a list of (name, value) pairs, for the client's
responses and the upstream's requests alike."""


class HeaderLookup:
    headers = ()

    def header(self, name, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]
