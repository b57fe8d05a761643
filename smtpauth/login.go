package smtpauth

import "github.com/emersion/go-sasl"

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login-00): the server asks "Username:" and then
// "Password:", the client answers each in turn. go-sasl ships only the
// client. A client may send the user name as the initial response, as
// go-sasl's client does; the first challenge is then skipped.
type loginServer struct {
	step         int // 0: nothing yet, 1: asked for the user name, 2: asked for the password, 3: done
	user         string
	authenticate func(user, pass string) error
}

var (
	challengeUser = []byte("Username:")
	challengePass = []byte("Password:")
)

func newLoginServer(authenticate func(user, pass string) error) sasl.Server {
	return &loginServer{authenticate: authenticate}
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return challengeUser, false, nil
		}
		l.user = string(resp)
		l.step = 2
		return challengePass, false, nil
	case 1:
		l.user = string(resp)
		l.step = 2
		return challengePass, false, nil
	case 2:
		l.step = 3
		return nil, true, l.authenticate(l.user, string(resp))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
