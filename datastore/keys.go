package datastore

// FelixConfigKey holds the FelixConfiguration named default (api.FelixConfig):
// how containers may reach their own host.
const FelixConfigKey = Prefix + "config/felix"
