package web

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"mailpost/config"
)

// Thunderbird autoconfig: the Mozilla "clientConfig" format, version 1.1
// (wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).

type clientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider emailProvider `xml:"emailProvider"`
}

type emailProvider struct {
	ID               string          `xml:"id,attr"`
	Domains          []string        `xml:"domain"`
	DisplayName      string          `xml:"displayName"`
	DisplayShortName string          `xml:"displayShortName"`
	Incoming         []mozillaServer `xml:"incomingServer"`
	Outgoing         []mozillaServer `xml:"outgoingServer"`
}

type mozillaServer struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
}

// mozillaSocketType maps a connection method to autoconfig's socketType.
func mozillaSocketType(m config.Method) string {
	switch m {
	case config.MethodSSL:
		return "SSL"
	case config.MethodTLS:
		return "STARTTLS"
	}
	return "plain"
}

// autoconfig answers Thunderbird's GET, which carries ?emailaddress=.
func (h *Handler) autoconfig(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	cfg := h.b.Config()
	if len(cfg.Domains) == 0 {
		http.Error(w, "404 no mail domain configured", http.StatusNotFound)
		return
	}
	// The provider id is the user's domain when it is ours, so the
	// answer reads naturally; every configured domain is listed anyway.
	id := cfg.Domains[0]
	if d := emailDomain(r.URL.Query().Get("emailaddress")); d != "" && cfg.IsLocalDomain(d) {
		id = d
	}
	e := EndpointsFor(cfg, remoteAddr(r))
	cc := clientConfig{Version: "1.1", Provider: emailProvider{
		ID: id, Domains: cfg.Domains, DisplayName: cfg.Hostname, DisplayShortName: id,
	}}
	server := func(typ string, c config.ConnSetting) mozillaServer {
		// The password travels inside TLS unless the file offers a
		// plain method, which only plain_text_login POP3 may.
		return mozillaServer{Type: typ, Hostname: c.Host, Port: c.Port, SocketType: mozillaSocketType(c.Method),
			Authentication: "password-cleartext", Username: "%EMAILADDRESS%"}
	}
	for _, c := range e.POP3 {
		cc.Provider.Incoming = append(cc.Provider.Incoming, server("pop3", c))
	}
	for _, c := range e.SMTP {
		cc.Provider.Outgoing = append(cc.Provider.Outgoing, server("smtp", c))
	}
	writeXML(w, "application/xml; charset=utf-8", cc)
}

// writeXML sends v with an XML declaration; the document is built first,
// so a marshalling error is a 500 and not half a document.
func writeXML(w http.ResponseWriter, contentType string, v any) {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	enc.Indent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	buf.WriteByte('\n')
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}

// Outlook autodiscover, the "POX" (plain old XML) flavour: [MS-OXDSCLI]
// §2.2.3 (request) and §2.2.4 (response), Outlook response schema 2006a.
const (
	autodiscoverRequestNS  = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
	autodiscoverResponseNS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	outlookResponseNS      = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

type autodiscoverRequest struct {
	XMLName xml.Name `xml:"Autodiscover"`
	Request struct {
		EMailAddress             string `xml:"EMailAddress"`
		AcceptableResponseSchema string `xml:"AcceptableResponseSchema"`
	} `xml:"Request"`
}

type autodiscoverResponse struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response any
}

type outlookResponse struct {
	XMLName xml.Name       `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
	User    *outlookUser   `xml:"User,omitempty"`
	Account outlookAccount `xml:"Account"`
}

type outlookUser struct {
	DisplayName string `xml:"DisplayName"`
}

type outlookAccount struct {
	AccountType string            `xml:"AccountType"`
	Action      string            `xml:"Action"`
	Protocols   []outlookProtocol `xml:"Protocol"`
}

type outlookProtocol struct {
	Type           string `xml:"Type"`
	Server         string `xml:"Server"`
	Port           int    `xml:"Port"`
	LoginName      string `xml:"LoginName"`
	DomainRequired string `xml:"DomainRequired"`
	SPA            string `xml:"SPA"`
	SSL            string `xml:"SSL"`
	Encryption     string `xml:"Encryption"`
	AuthRequired   string `xml:"AuthRequired"`
	UsePOPAuth     string `xml:"UsePOPAuth,omitempty"`
}

// autodiscoverError is the response schema's Error element (§2.2.4.2).
type autodiscoverError struct {
	XMLName xml.Name `xml:"Response"`
	Error   struct {
		Time      string `xml:"Time,attr"`
		ID        string `xml:"Id,attr"`
		ErrorCode int    `xml:"ErrorCode"`
		Message   string `xml:"Message"`
		DebugData string `xml:"DebugData"`
	} `xml:"Error"`
}

// outlookEncryption maps a method to the Encryption element: "SSL" is
// implicit TLS, "TLS" is STARTTLS.
func outlookEncryption(m config.Method) (ssl, enc string) {
	switch m {
	case config.MethodSSL:
		return "on", "SSL"
	case config.MethodTLS:
		return "on", "TLS"
	}
	return "off", "None"
}

// autodiscover answers Outlook's POX request. Outlook's order
// ([MS-OXDISCO] §3.1.5): POST to https://<domain> and
// https://autodiscover.<domain>, then an unauthenticated GET to
// http://autodiscover.<domain> expecting a 302 to an https URL (which it
// then POSTs to), then the _autodiscover._tcp SRV record that `mailpost
// dns` prints. Other clients GET with the address in the query; they get
// the same document.
func (h *Handler) autodiscover(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		h.autodiscoverPOST(w, r)
	case http.MethodGet, http.MethodHead:
		if r.TLS == nil && h.autodiscoverRedirect(w, r) {
			return
		}
		email := queryEmail(r.URL.Query())
		if email == "" {
			noStore(w)
			http.Error(w, "400 POST an Autodiscover request (Outlook POX schema), or GET with ?EMailAddress=you@domain",
				http.StatusBadRequest)
			return
		}
		h.autodiscoverAnswer(w, r, email)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
	}
}

// queryEmail is the address a GET names, under the parameter names
// clients use (EMailAddress, emailaddress, email), in any capitalisation.
func queryEmail(q url.Values) string {
	for k, v := range q {
		if (strings.EqualFold(k, "EMailAddress") || strings.EqualFold(k, "email")) && len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
	}
	return ""
}

// autodiscoverRedirect is Outlook's "HTTP redirect method": a plain GET is
// sent with 302 (the status Outlook follows) to the same path on the
// mail host over https, whose certificate Outlook can verify, unlike
// autodiscover.<domain>'s, which often has none. It reports false when
// there is no https listener; the GET is then answered here.
func (h *Handler) autodiscoverRedirect(w http.ResponseWriter, r *http.Request) bool {
	cfg := h.b.Config()
	if cfg.HTTP == nil || len(cfg.HTTP.TLSBindings) == 0 {
		return false
	}
	u := url.URL{Scheme: "https", Host: httpsHost(cfg, r, cfg.Hostname), Path: AutodiscoverPath, RawQuery: r.URL.RawQuery}
	http.Redirect(w, r, u.String(), http.StatusFound)
	return true
}

func (h *Handler) autodiscoverPOST(w http.ResponseWriter, r *http.Request) {
	var req autodiscoverRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = xml.Unmarshal(body, &req)
	}
	if err != nil || req.XMLName.Space != autodiscoverRequestNS {
		h.autodiscoverFail(w, 600, "Invalid Request")
		return
	}
	if s := strings.TrimSpace(req.Request.AcceptableResponseSchema); s != "" && s != outlookResponseNS {
		// Mobile sync (ActiveSync) schemas: not something we serve.
		h.autodiscoverFail(w, 601, "Provider is not available")
		return
	}
	h.autodiscoverAnswer(w, r, strings.TrimSpace(req.Request.EMailAddress))
}

// autodiscoverAnswer sends the Outlook response schema's settings for
// email, or error 600 when it is not in a configured domain.
func (h *Handler) autodiscoverAnswer(w http.ResponseWriter, r *http.Request, email string) {
	cfg := h.b.Config()
	if !validAddress(cfg, email) {
		h.autodiscoverFail(w, 600, "Invalid Request")
		return
	}
	e := EndpointsFor(cfg, remoteAddr(r))
	acct := outlookAccount{AccountType: "email", Action: "settings"}
	proto := func(typ string, c config.ConnSetting) outlookProtocol {
		ssl, enc := outlookEncryption(c.Method)
		p := outlookProtocol{Type: typ, Server: c.Host, Port: c.Port, LoginName: email,
			DomainRequired: "off", SPA: "off", SSL: ssl, Encryption: enc, AuthRequired: "on"}
		if typ == "SMTP" {
			// The same account logs in for sending (RFC 6409 §4.3 does
			// not require it, mailpost does).
			p.UsePOPAuth = "on"
		}
		return p
	}
	for _, c := range e.POP3 {
		acct.Protocols = append(acct.Protocols, proto("POP3", c))
	}
	for _, c := range e.SMTP {
		acct.Protocols = append(acct.Protocols, proto("SMTP", c))
	}
	writeXML(w, "text/xml; charset=utf-8", autodiscoverResponse{
		Response: outlookResponse{User: &outlookUser{DisplayName: email}, Account: acct}})
}

func (h *Handler) autodiscoverFail(w http.ResponseWriter, code int, msg string) {
	var e autodiscoverError
	e.Error.Time = h.now().UTC().Format("15:04:05.0000000")
	e.Error.ID = fmt.Sprint(h.now().UnixNano() & 0x7fffffff)
	e.Error.ErrorCode, e.Error.Message = code, msg
	// Errors are reported in the document with 200, as Exchange does;
	// Outlook reads the ErrorCode.
	writeXML(w, "text/xml; charset=utf-8", autodiscoverResponse{Response: e})
}
